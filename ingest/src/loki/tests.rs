//! Loki decoding tests.

use super::*;
use crate::{SeriesLimits, SeriesRegistry};

#[test]
fn label_strings_parse_with_escapes_and_any_order() {
    let l = parse_labels(r#"{namespace="prod", app="api", msg="say \"hi\"\n"}"#).unwrap();
    assert_eq!(
        l,
        [
            ("app".into(), "api".into()),
            ("msg".into(), "say \"hi\"\n".into()),
            ("namespace".into(), "prod".into())
        ]
    );
    for bad in [
        "app=\"x\"",
        "{app=x}",
        "{app=\"x}",
        "{=\"x\"}",
        "{a=\"1\",a=\"2\"}",
    ] {
        assert!(parse_labels(bad).is_err(), "{bad}");
    }
    assert!(parse_labels("{}").unwrap().is_empty());
}

#[test]
fn proto_and_json_give_the_same_lines() {
    let streams = vec![
        (
            "{job=\"api\", level=\"warn\"}".to_owned(),
            vec![(1_795_000_000_123_456_789, "disk almost full".to_owned())],
        ),
        (
            "{job=\"worker\"}".to_owned(),
            vec![
                (
                    1_795_000_001_000_000_000,
                    "level=error msg=\"boom\"".to_owned(),
                ),
                (1_795_000_002_000_000_000, "INFO started".to_owned()),
                (1_795_000_003_000_000_000, "plain line".to_owned()),
            ],
        ),
    ];
    let proto = encode_proto(&streams);
    let json = serde_json::json!({"streams": [
        {"stream": {"job": "api", "level": "warn"}, "values": [["1795000000123456789", "disk almost full"]]},
        {"stream": {"job": "worker"}, "values": [
            ["1795000001000000000", "level=error msg=\"boom\""],
            ["1795000002000000000", "INFO started", {"trace_id": "abc"}],
            ["1795000003000000000", "plain line"]]}
    ]})
    .to_string();
    let limits = SeriesLimits::default();
    let mut batches = Vec::new();
    for proto_form in [true, false] {
        let mut registry = SeriesRegistry::new();
        let mut lines = LogLines::default();
        let stats = if proto_form {
            decode_proto(&proto, &mut registry, &limits, &mut lines).unwrap()
        } else {
            decode_json(json.as_bytes(), &mut registry, &limits, &mut lines).unwrap()
        };
        assert_eq!(
            stats,
            PushStats {
                streams: 2,
                lines: 4,
                ..PushStats::default()
            }
        );
        batches.push(logs_to_batch(lines, log_schema()).unwrap());
    }
    assert_eq!(batches[0], batches[1]);
    let level = batches[0]
        .column(3)
        .as_any()
        .downcast_ref::<arrow_array::StringArray>()
        .unwrap();
    let levels: Vec<Option<&str>> = (0..4)
        .map(|i| (!arrow_array::Array::is_null(level, i)).then(|| level.value(i)))
        .collect();
    assert_eq!(levels, [Some("warn"), Some("error"), Some("info"), None]);
    let ts = batches[0]
        .column(1)
        .as_any()
        .downcast_ref::<arrow_array::Int64Array>()
        .unwrap();
    assert_eq!(ts.value(0), 1_795_000_000_123_456_789);
}

#[test]
fn gzip_is_bounded() {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&vec![b'a'; 1 << 20]).unwrap();
    let gz = enc.finish().unwrap();
    assert_eq!(gunzip(&gz, 2 << 20).unwrap().len(), 1 << 20);
    assert!(matches!(
        gunzip(&gz, 1 << 10),
        Err(crate::DecodeError::TooLarge { .. })
    ));
    assert!(gunzip(b"not gzip", 1 << 10).is_err());
}

#[test]
fn bad_pushes_are_errors_not_panics() {
    let limits = SeriesLimits::default();
    let mut registry = SeriesRegistry::new();
    let mut lines = LogLines::default();
    assert!(
        decode_json(
            b"{\"streams\": [{\"stream\": {}, \"values\": [[\"soon\", \"x\"]]}]}",
            &mut registry,
            &limits,
            &mut lines
        )
        .is_err()
    );
    assert!(decode_json(b"[]", &mut registry, &limits, &mut lines).is_err());
    assert!(
        decode_proto(
            &[0x0a, 0x05, 0x0a, 0x03, b'{', b'a', b'}'],
            &mut registry,
            &limits,
            &mut lines
        )
        .is_err()
    );
}
