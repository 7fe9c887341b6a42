//! Feeds arbitrary bytes to the strict HTTP/1.1 request parsers: the head parser must
//! never panic, never claim more than it was given, give the same answer for the head
//! alone as for the head with anything after it, and never accept a head that holds a
//! bare LF; the chunked decoder must never panic and decode the same body, or refuse it
//! the same way, however the bytes are split into reads and however small the steps.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spillway_server::fuzzing::{decode_chunked, parse_head};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the split points and the step size for the body check.
    let Some((&knob, data)) = data.split_first() else {
        return;
    };
    if let Ok(Some((len, _framing))) = parse_head(data) {
        assert!(len <= data.len());
        let head = &data[..len];
        assert_eq!(parse_head(head), parse_head(data));
        assert!(
            head.iter()
                .enumerate()
                .all(|(i, &b)| b != b'\n' || (i > 0 && head[i - 1] == b'\r')),
            "accepted a bare LF"
        );
    }

    let whole = decode_chunked(&[data], usize::MAX);
    let step = (knob as usize % 7) + 1;
    let pieces: Vec<&[u8]> = data.chunks(step).collect();
    let split = decode_chunked(&pieces, (knob as usize >> 3) + 1);
    match (&whole, &split) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!(a, b),
        // A refusal may come before or after bytes were handed on, but both readings
        // must refuse or both accept.
        _ => panic!("whole {whole:?} but split {split:?}"),
    }
    if let Ok((body, _)) = &whole {
        assert!(body.len() <= data.len());
    }
});
