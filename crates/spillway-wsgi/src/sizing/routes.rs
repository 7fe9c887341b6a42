//! Time per request route by route: whether a step made the same requests take longer.
//!
//! A window's mean time per request mixes whatever requests landed in it. An application
//! with fast requests beside slow ones (a 100 ms backend call beside answers in 0.1 ms),
//! at a few threads, sees windows of a few hundred milliseconds that hold two slow
//! requests or ten, so its throughput and mean time per request swing several-fold between
//! windows at one count, and no verdict on a step stands out of that. Compared route by
//! route (method and path, with segments that hold digits taken for identifiers), the
//! time of the same requests does not depend on the mix: it stays flat when the extra
//! threads serve requests, and rises in proportion when they queue for a lock, a
//! connection or the GIL.

use std::hash::{Hash, Hasher};

/// Which requests a completion belongs to: a hash of the method and the path's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Route(u64);

impl Route {
    /// The route of a request: method, and path segments, those holding a digit (an
    /// identifier: `/v2/servers/6f1c…`) as one placeholder.
    pub fn of(method: &[u8], path: &[u8]) -> Route {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        method.hash(&mut h);
        for segment in path.split(|&b| b == b'/') {
            if segment.iter().any(u8::is_ascii_digit) {
                b"*".hash(&mut h);
            } else {
                segment.hash(&mut h);
            }
        }
        Route(h.finish())
    }
}

/// Routes a window keeps apart; the rest are counted together as one.
const ROUTES: usize = 8;
/// Completions of a route a window needs before its mean counts.
const ROUTE_MIN: u32 = 2;
/// Share of the time threads were held that the compared routes must cover.
const COVERED_MIN: f64 = 0.5;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Slot {
    route: Route,
    n: u32,
    /// Seconds held, and their squares (for the spread).
    sum: f64,
    squares: f64,
}

impl Slot {
    fn mean(&self) -> f64 {
        self.sum / f64::from(self.n.max(1))
    }

    /// Coefficient of variation of the times.
    fn spread(&self) -> f64 {
        let n = f64::from(self.n.max(1));
        let mean = self.sum / n;
        let var = (self.squares / n - mean * mean).max(0.0);
        var.sqrt() / mean.max(1e-9)
    }
}

/// A window's completions, route by route.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Routes {
    slots: [Slot; ROUTES],
    used: usize,
    /// Seconds held by all completions, those of routes beyond `ROUTES` included.
    total: f64,
}

/// How the same routes' time per request compares between two windows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SameRoutes {
    /// Time per request after over before, weighted by the time each route held threads
    /// before.
    pub ratio: f64,
    /// The routes' coefficient of variation, weighted alike (the larger of the two
    /// windows'): above about one, a route's times are a queue's, and a mean from a few of
    /// them says little.
    pub spread: f64,
    /// Share of the earlier window's thread time the compared routes cover.
    pub covered: f64,
}

impl Routes {
    /// A completion of `route` that held its thread `secs`.
    pub fn add(&mut self, route: Route, secs: f64) {
        self.total += secs;
        let slot = match self.slots[..self.used]
            .iter()
            .position(|s| s.route == route)
        {
            Some(i) => &mut self.slots[i],
            None if self.used < ROUTES => {
                self.used += 1;
                let s = &mut self.slots[self.used - 1];
                s.route = route;
                s
            }
            None => return,
        };
        slot.n += 1;
        slot.sum += secs;
        slot.squares += secs * secs;
    }

    /// The comparison of `after` with `self` over the routes both counted enough of, if
    /// they cover at least half of the time threads were held in `self`.
    pub fn compare(&self, after: &Routes) -> Option<SameRoutes> {
        let (mut ratio, mut spread, mut covered) = (0.0, 0.0, 0.0);
        for b in self.slots[..self.used].iter().filter(|s| s.n >= ROUTE_MIN) {
            let Some(a) = after.slots[..after.used]
                .iter()
                .find(|s| s.route == b.route && s.n >= ROUTE_MIN)
            else {
                continue;
            };
            let w = b.sum / self.total.max(1e-12);
            ratio += w * a.mean() / b.mean().max(1e-12);
            spread += w * a.spread().max(b.spread());
            covered += w;
        }
        (covered >= COVERED_MIN).then(|| SameRoutes {
            ratio: ratio / covered,
            spread: spread / covered,
            covered,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_in_paths_are_one_route() {
        let a = Route::of(b"GET", b"/v2/servers/6f1c2a");
        assert_eq!(a, Route::of(b"GET", b"/v2/servers/99"));
        assert_ne!(a, Route::of(b"DELETE", b"/v2/servers/99"));
        assert_ne!(a, Route::of(b"GET", b"/v2/servers"));
        assert_ne!(Route::of(b"GET", b"/slow"), Route::of(b"GET", b"/"));
    }

    #[test]
    fn the_mix_does_not_move_the_ratio_but_slower_routes_do() {
        let (fast, slow) = (Route::of(b"GET", b"/"), Route::of(b"GET", b"/slow"));
        let window = |n_fast: u32, n_slow: u32, slow_secs: f64| {
            let mut r = Routes::default();
            (0..n_fast).for_each(|_| r.add(fast, 0.0001));
            (0..n_slow).for_each(|_| r.add(slow, slow_secs));
            r
        };
        // Two slow requests in one window, ten in the next: the same time per request.
        let same = window(90, 2, 0.1).compare(&window(20, 10, 0.1)).unwrap();
        assert!((same.ratio - 1.0).abs() < 1e-6, "{same:?}");
        assert!(same.spread < 1e-3 && same.covered > 0.99, "{same:?}");
        let slower = window(90, 2, 0.1).compare(&window(90, 2, 0.2)).unwrap();
        assert!(slower.ratio > 1.9, "{slower:?}");
        // No slow request after: the fast ones alone cover too little of the time before.
        assert!(window(90, 2, 0.1).compare(&window(90, 0, 0.1)).is_none());
    }

    #[test]
    fn a_queue_shows_as_spread() {
        let route = Route::of(b"POST", b"/items");
        let (mut before, mut after) = (Routes::default(), Routes::default());
        for i in 0..20 {
            before.add(route, 0.001);
            // Times of a queue: most quick, some waited long.
            after.add(route, if i % 5 == 0 { 0.1 } else { 0.001 });
        }
        let c = before.compare(&after).unwrap();
        assert!(c.spread > 1.0, "{c:?}");
    }
}
