//! `traceparent` parsing (`trace::TraceParent::parse`), as the HTTP edge and
//! the AMQP transport call it on a header a client chose.
//!
//! Input (structured): a header value, and the parts of a well-formed one.
//!
//! Checked besides "no crash": what parses is valid W3C (non-zero ids, four
//! lowercase hex fields of the right widths, version not `ff`, no fifth
//! field in version `00`) and prints back as the same header, trimmed, for
//! version `00`; a header built from valid parts parses to those parts; the
//! ids, flags and child spans keep their meaning.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use shimeji::trace::TraceParent;

#[derive(Arbitrary, Debug)]
struct Input {
    header: String,
    version: u8,
    trace_id: u128,
    span_id: u64,
    flags: u8,
    suffix: String,
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn check_parsed(header: &str, parsed: TraceParent) {
    let fields: Vec<&str> = header.trim().split('-').collect();
    assert!(fields.len() >= 4, "{header:?}");
    let (version, trace, span, flags) = (fields[0], fields[1], fields[2], fields[3]);
    assert!(is_lower_hex(version, 2) && version != "ff", "{header:?}");
    assert!(is_lower_hex(trace, 32), "{header:?}");
    assert!(is_lower_hex(span, 16), "{header:?}");
    assert!(is_lower_hex(flags, 2), "{header:?}");
    assert!(version != "00" || fields.len() == 4, "{header:?}");
    assert_ne!(parsed.trace_id(), 0);
    assert_ne!(parsed.span_id(), 0);
    assert_eq!(parsed.trace_id_hex(), trace);
    assert_eq!(parsed.span_id_hex(), span);
    let printed = parsed.to_string();
    assert_eq!(printed.len(), 55);
    assert_eq!(&printed[3..], format!("{trace}-{span}-{flags}"));
    if version == "00" {
        assert_eq!(printed, header.trim());
    }
    assert_eq!(TraceParent::parse(&printed), Some(parsed), "{printed}");
    let sampled = u8::from_str_radix(flags, 16).expect("hex") & 1 == 1;
    assert_eq!(parsed.sampled(), sampled);
    let child = parsed.child();
    assert_eq!(child.trace_id(), parsed.trace_id());
    assert_eq!(child.sampled(), parsed.sampled());
    assert_ne!(child.span_id(), 0);
}

fuzz_target!(|input: Input| {
    if let Some(parsed) = TraceParent::parse(&input.header) {
        check_parsed(&input.header, parsed);
    }

    // A header built from parts.
    let header = format!(
        "{:02x}-{:032x}-{:016x}-{:02x}{}",
        input.version, input.trace_id, input.span_id, input.flags, input.suffix
    );
    let valid = input.version != 0xff
        && input.trace_id != 0
        && input.span_id != 0
        && (input.suffix.is_empty() || (input.version != 0 && input.suffix.starts_with('-')));
    match TraceParent::parse(&header) {
        Some(parsed) => {
            check_parsed(&header, parsed);
            assert_eq!(parsed.trace_id(), input.trace_id);
            assert_eq!(parsed.span_id(), input.span_id);
        }
        None => assert!(!valid, "refused a valid header {header:?}"),
    }

    // from_parts and Display agree with parse.
    if let Some(tp) = TraceParent::from_parts(input.trace_id, input.span_id, input.flags & 1 == 1) {
        assert_eq!(TraceParent::parse(&tp.to_string()), Some(tp));
    } else {
        assert!(input.trace_id == 0 || input.span_id == 0);
    }
});
