//! The sizing controller's verdicts on a measured step (kept or undone, with the numbers
//! that decided) and its fast paths (the vetoes on growth, a stalled pool, GIL contention).

use std::time::Instant;

use super::*;

impl Sizing {
    /// The verdict on a probe up from `from` to the current level: what each completed.
    /// (If the queue emptied meanwhile, demand was met or the load left: the count alone
    /// says which.)
    pub(super) fn judge_up(
        &mut self,
        from: Rate,
        rate: Rate,
        saturated: bool,
        now: Instant,
    ) -> Decision {
        self.phase = Phase::Settled;
        let t = self.target;
        let ideal = f64::from(t) / f64::from(from.threads);
        let before = if saturated {
            from.throughput.max(self.known.best(from.threads, true))
        } else {
            from.throughput
        };
        let (after, taken, confounded) = counted(before, rate.throughput, &from, &rate);
        let gain = after / before.max(1e-9);
        // The gain must also stand out of the noise between windows at one count (but a
        // step that delivers half of perfect scaling always counts).
        let noise = (2.0 * self.known.noise()).min(0.5 * (ideal - 1.0));
        let clear = gain >= 1.0 + (GAIN_MIN * (ideal - 1.0)).max(noise);
        // An application whose requests are of very different lengths (fast ones beside
        // slow ones) has throughput too noisy for a step to stand out, and a step that met
        // the demand (the queue emptied) cannot deliver what perfect scaling would; the time
        // per request tells: it stays flat when the extra threads serve requests, and rises
        // in proportion when they only queue for a lock, a connection or the GIL (which
        // also empties the front's queue, into the application).
        let flat_max = 1.0 + SERVICE_RISE_MAX * (ideal - 1.0);
        let flat = gain >= 1.0
            && taken.is_none()
            && rate.service.as_secs_f64() <= from.service.as_secs_f64() * flat_max;
        // At a few threads, fast requests beside slow ones make any window's count hinge
        // on how many slow ones landed in it; the same requests' time does not. With every
        // thread busy and requests waiting, the same routes taking as long (their times
        // consistent, and the windows' completions accounting for the threads' busy time,
        // so no long request hid in flight) means, by Little's law, the extra threads
        // complete more in proportion, whatever this window counted.
        let same = from.routes.compare(&rate.routes).filter(|c| {
            saturated
                && taken.is_none()
                && c.ratio <= flat_max
                && c.spread <= ROUTE_SPREAD_MAX
                && from.accounted.min(rate.accounted) >= ACCOUNTED_MIN
        });
        if clear || flat || same.is_some() {
            self.hold = HOLD_FIRST;
            self.plateau = false;
            let why = match same {
                Some(c) if !(clear || flat) => format!(
                    "{t} threads served the same requests in {:.2}x the time each, route by route (over {:.0}% of the threads' time), with all busy: by Little's law they complete {ideal:.1}x as much, whatever a window counts ({before:.0} -> {after:.0} req/s, {:.1} -> {:.1} ms per request: at a few threads, which slow requests land in a window moves both)",
                    c.ratio,
                    c.covered * 100.0,
                    ms(from.service),
                    ms(rate.service),
                ),
                _ => format!(
                    "{t} threads raised throughput: {before:.0} -> {after:.0} req/s ({:+.0}%; {:+.0}% if it scaled), {:.1} -> {:.1} ms per request{}",
                    (gain - 1.0) * 100.0,
                    (ideal - 1.0) * 100.0,
                    ms(from.service),
                    ms(rate.service),
                    if saturated { "" } else { "; no request waits any more" }
                ),
            };
            let d = self.set(t, now, Rule::Gain, why);
            self.scaled = if gain >= 1.0 + CLEAR_GAIN * (ideal - 1.0) {
                self.scaled.saturating_add(1)
            } else {
                0
            };
            return d;
        }
        // A verdict on a window where the queue emptied (demand met, or the load left), or
        // where the other workers changed their threads while the whole did not follow this
        // one (which moved the whole?), says nothing of the curve: no plateau, and the hold
        // does not grow.
        let telling = saturated && !(confounded && taken.is_some());
        self.plateau = telling;
        let hold = self.hold;
        self.hold_until = now + hold;
        if telling {
            self.hold = (hold * 2).min(HOLD_MAX);
        }
        let why = format!(
            "{t} threads added no throughput: {before:.0} -> {after:.0} req/s ({:+.0}%; {:+.0}% if it scaled, noise ±{:.0}%){} while time per request went {:.1} -> {:.1} ms (the extra requests only queue inside the application); back to {}, next try in {:.0} s",
            (gain - 1.0) * 100.0,
            (ideal - 1.0) * 100.0,
            self.known.noise() * 100.0,
            taken.unwrap_or_default(),
            ms(from.service),
            ms(rate.service),
            from.threads,
            hold.as_secs_f64()
        );
        let d = self.set(from.threads, now, Rule::NoGain, why);
        // Back at a measured level: its numbers stand, the probe's are the previous.
        self.previous = Some(rate);
        self.current = Some(from);
        d
    }

    /// The verdict on a probe down from `from` to the current level.
    pub(super) fn judge_down(&mut self, from: Rate, rate: Rate, now: Instant) -> Decision {
        self.phase = Phase::Settled;
        let t = self.target;
        let hold = self.hold;
        self.hold_until = now + hold;
        self.hold = (hold * 2).min(HOLD_MAX);
        // Smoothed over the level's measurements with requests waiting.
        let before = match self.known.best(from.threads, false) {
            x if x > 0.0 => x,
            _ => from.throughput,
        };
        // While the other workers changed their threads, a loss that the whole did not show
        // may be theirs: only this worker's own numbers count then.
        let (after, taken) = match counted(before, rate.throughput, &from, &rate) {
            (_, Some(_), true) => (rate.throughput, None),
            (after, taken, _) => (after, taken),
        };
        // A loss that does not stand out of the noise is no loss: fewer threads then.
        if after >= (1.0 - LOSS_MAX.max(self.known.noise()).min(LOSS_NOISY_MAX)) * before {
            let why = format!(
                "{t} threads complete as much as {}: {before:.0} -> {after:.0} req/s{}, {:.1} -> {:.1} ms per request; staying at {t}, next try in {:.0} s",
                from.threads,
                taken.unwrap_or_default(),
                ms(from.service),
                ms(rate.service),
                hold.as_secs_f64()
            );
            return self.set(t, now, Rule::FewerSuffice, why);
        }
        self.plateau = false;
        let why = format!(
            "{t} threads lost throughput: {before:.0} -> {after:.0} req/s; back to {}, next try in {:.0} s",
            from.threads,
            hold.as_secs_f64()
        );
        let d = self.set(from.threads, now, Rule::FewerLose, why);
        self.previous = Some(rate);
        self.current = Some(from);
        d
    }

    /// Why more threads cannot help now, if one of the fast paths says so.
    pub(super) fn veto(&self, s: &Sample) -> Option<String> {
        if !s.fresh {
            return Some("rates cover an idle spell".into());
        }
        if s.front_full {
            return Some("the front is not taking responses as fast as they come".into());
        }
        if s.gil_wait >= GIL_WAIT_GROW_MAX {
            return Some(format!(
                "threads wait {:.2} ms on average to take the GIL",
                ms(s.gil_wait)
            ));
        }
        // Below a few threads, CPU is no veto: the measurement decides (a few threads let
        // the front hand a busy worker its requests in batches, and short requests take
        // turns at the GIL with long ones); past them the GIL or the host is the limit.
        let few = self.target < CPU_BOUND_POOL;
        if s.cpu >= CPU_GROW_MAX && !few {
            return Some(format!(
                "the process uses {:.0}% of a core: the GIL is the bottleneck",
                s.cpu * 100.0
            ));
        }
        if s.host_busy >= HOST_BUSY_MAX && s.cpu >= CPU_HOST_SHARE_MIN && !few {
            return Some(format!(
                "the host is {:.0}% busy and this worker uses {:.0}% of a core",
                s.host_busy * 100.0,
                s.cpu * 100.0
            ));
        }
        None
    }

    /// Every thread held with nothing finishing while requests wait: one more thread, up
    /// to `STALL_MAX`, so short requests get past long ones. (A CPU-bound long request
    /// still lets short ones take turns at the GIL with a second thread.)
    pub(super) fn stalled(&mut self, s: &Sample, waiting: bool) -> Option<Decision> {
        let t = self.target;
        let since = s.now.saturating_duration_since(self.last_change);
        if !waiting
            || s.busy < t
            || s.since_done < STALL
            || since < STALL
            || t >= STALL_MAX.min(self.limits.max)
            || s.now < self.hold_until
            || s.front_full
            || (t >= 2 && s.cpu >= CPU_GROW_MAX)
        {
            return None;
        }
        self.phase = Phase::Settled;
        let why = format!(
            "no request finished for {:.1} s with all {t} threads busy while requests wait",
            s.since_done.as_secs_f64()
        );
        Some(self.set(t + 1, s.now, Rule::Stalled, why))
    }

    /// GIL contention while the process does real work: a smaller pool.
    pub(super) fn gil_contention(&mut self, s: &Sample) -> Option<Decision> {
        let since = s.now.saturating_duration_since(self.last_change);
        if !s.fresh
            || s.cpu < CPU_CONTENDED_MIN
            || s.gil_wait < GIL_WAIT_MAX
            || self.target <= self.floor()
            || since < SHRINK_INTERVAL
        {
            return None;
        }
        let t = self.target;
        let to = (t - (t / 8).max(1)).max(self.floor());
        self.phase = Phase::Settled;
        let why = format!(
            "threads contend for the GIL (process cpu {:.0}% of a core, {:.1} ms average wait to take it)",
            s.cpu * 100.0,
            ms(s.gil_wait)
        );
        Some(self.set(to, s.now, Rule::GilContention, why))
    }
}

/// What a step changed in this worker's throughput (`before` -> `own`), counting only what
/// also shows in all workers' (when the front reported it): a worker that takes a bigger
/// share of a lock, a file or the clients that all workers contend for completes more
/// while the others complete less, and the whole stays. Over the span the front's count
/// covers, a change counts in full while all workers' moved by at least half as much as
/// this worker's, the same way (the others' own changes are noise), and in proportion
/// below. Returns the throughput to judge by, what to add to the verdict when the
/// others' change cancelled some of it, and whether the other workers changed their own
/// threads meanwhile (their throughput then moved for reasons of their own too).
fn counted(before: f64, own: f64, from: &Rate, rate: &Rate) -> (f64, Option<String>, bool) {
    let (Some(a), Some(b)) = (from.all, rate.all) else {
        return (own, None, false);
    };
    let confounded = a.others.is_none() || a.others != b.others;
    let delta = own - before;
    let delta_own = b.own - a.own;
    let delta_all = b.all - a.all;
    // Over the span the step did not move this worker the same way: nothing to compare.
    if delta * delta_own <= 0.0 {
        return (own, None, confounded);
    }
    let shown = (2.0 * delta_all / delta_own).clamp(0.0, 1.0);
    if shown >= 1.0 {
        return (own, None, confounded);
    }
    let after = before + shown * delta;
    let why = format!(
        " (it completed {own:.0}, but all workers together {:.0} -> {:.0} req/s while this one {:.0} -> {:.0}: the rest came from or went to the others{})",
        a.all,
        b.all,
        a.own,
        b.own,
        if confounded {
            ", which changed their own threads meanwhile"
        } else {
            ""
        }
    );
    (after, Some(why), confounded)
}
