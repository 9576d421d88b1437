//! Decoder tests: encode→decode round trips (property tests), limits, malformed input.

use proptest::prelude::*;

use super::*;
use crate::{SeriesLimits, SeriesRegistry};

fn decode(v2: bool, body: &[u8]) -> Result<(SeriesRegistry, Samples, WriteStats), DecodeError> {
    let mut registry = SeriesRegistry::new();
    let mut samples = Samples::default();
    let limits = SeriesLimits::default();
    let stats = if v2 {
        decode_v2(body, &mut registry, &limits, &mut samples)?
    } else {
        decode_v1(body, &mut registry, &limits, &mut samples)?
    };
    Ok((registry, samples, stats))
}

fn series_strategy() -> impl Strategy<Value = Vec<SeriesData>> {
    let label = ("[a-z_]{1,6}", "[ -~é]{0,8}");
    let one = (
        proptest::collection::btree_map(label.0, label.1, 1..6),
        proptest::collection::vec((any::<i64>(), any::<f64>()), 1..4),
    )
        .prop_map(|(labels, samples)| SeriesData {
            labels: labels.into_iter().collect(),
            samples,
        });
    proptest::collection::vec(one, 0..20)
}

proptest! {
    #[test]
    fn v1_and_v2_round_trip(series in series_strategy()) {
        for v2 in [false, true] {
            let body = if v2 { encode_v2(&series) } else { encode_v1(&series) };
            let (registry, samples, stats) = decode(v2, &body).unwrap();
            prop_assert_eq!(stats.series, series.len() as u64);
            let mut row = 0;
            for s in &series {
                for &(t, v) in &s.samples {
                    let id = samples.series_id[row];
                    let labels: Vec<(String, String)> = registry.labels(id).unwrap().iter()
                        .map(|(n, v)| (n.to_string(), v.to_string())).collect();
                    prop_assert_eq!(&labels, &s.labels);
                    prop_assert_eq!(samples.timestamp_ms[row], t);
                    prop_assert_eq!(samples.value[row].to_bits(), v.to_bits());
                    row += 1;
                }
            }
            prop_assert_eq!(row, samples.len());
        }
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(false, &bytes);
        let _ = decode(true, &bytes);
        let _ = snappy_decompress(&bytes, 1 << 20);
    }
}

#[test]
fn the_same_series_gets_the_same_id_across_requests() {
    let series = realistic_series(50, 2, 1_700_000_000_000);
    let mut registry = SeriesRegistry::new();
    let limits = SeriesLimits::default();
    let mut a = Samples::default();
    let mut b = Samples::default();
    decode_v1(&encode_v1(&series), &mut registry, &limits, &mut a).unwrap();
    decode_v2(&encode_v2(&series), &mut registry, &limits, &mut b).unwrap();
    assert_eq!(registry.len(), 50);
    assert_eq!(a.series_id, b.series_id);
    assert_eq!(a.len(), 100);
}

#[test]
fn limits_are_enforced_with_clear_errors() {
    let mut long = realistic_series(1, 1, 0);
    long[0].labels.push(("zz".into(), "x".repeat(5_000)));
    let err = decode(false, &encode_v1(&long)).unwrap_err();
    assert!(
        matches!(err, DecodeError::Limit(ref m) if m.contains("`zz`")),
        "{err}"
    );

    let many: Vec<SeriesData> = vec![SeriesData {
        labels: (0..100).map(|i| (format!("l{i:03}"), "v".into())).collect(),
        samples: vec![(0, 1.0)],
    }];
    assert!(matches!(
        decode(true, &encode_v2(&many)).unwrap_err(),
        DecodeError::Limit(_)
    ));

    let dup = vec![SeriesData {
        labels: vec![("a".into(), "1".into()), ("a".into(), "2".into())],
        samples: vec![(0, 1.0)],
    }];
    assert!(matches!(
        decode(false, &encode_v1(&dup)).unwrap_err(),
        DecodeError::Invalid(_)
    ));

    let mut registry = SeriesRegistry::new();
    let tight = SeriesLimits {
        max_series: 10,
        ..SeriesLimits::default()
    };
    let err = decode_v1(
        &encode_v1(&realistic_series(11, 1, 0)),
        &mut registry,
        &tight,
        &mut Samples::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, DecodeError::Limit(ref m) if m.contains("10 series")),
        "{err}"
    );
}

#[test]
fn malformed_bodies_name_the_problem() {
    let body = encode_v1(&realistic_series(3, 1, 0));
    let err = decode(false, &body[..body.len() - 3]).unwrap_err();
    assert!(matches!(err, DecodeError::Malformed(_)), "{err}");
    // A v2 reference past the symbol table.
    let mut bad = Vec::new();
    crate::encode::bytes(&mut bad, 4, b"");
    let mut ts = Vec::new();
    crate::encode::bytes(&mut ts, 1, &[1, 9]);
    let mut s = Vec::new();
    crate::encode::double(&mut s, 1, 1.0);
    crate::encode::bytes(&mut ts, 2, &s);
    crate::encode::bytes(&mut bad, 5, &ts);
    let err = decode(true, &bad).unwrap_err();
    assert!(
        matches!(err, DecodeError::Invalid(ref m) if m.contains("symbol reference")),
        "{err}"
    );
}

#[test]
fn a_snappy_bomb_is_refused_before_inflating() {
    let zeros = vec![0u8; 8 << 20];
    let compressed = snap::raw::Encoder::new().compress_vec(&zeros).unwrap();
    assert!(compressed.len() < 512 * 1024, "{}", compressed.len());
    let err = snappy_decompress(&compressed, 1 << 20).unwrap_err();
    assert_eq!(
        err,
        DecodeError::TooLarge {
            size: 8 << 20,
            max: 1 << 20
        }
    );
    assert_eq!(
        snappy_decompress(&compressed, 16 << 20).unwrap().len(),
        8 << 20
    );
}

#[test]
fn samples_become_an_arrow_batch() {
    let (_, samples, _) = decode(false, &encode_v1(&realistic_series(4, 3, 10))).unwrap();
    let batch = crate::samples_to_batch(samples, crate::sample_schema()).unwrap();
    assert_eq!((batch.num_rows(), batch.num_columns()), (12, 3));
    assert_eq!(batch.schema().field(1).name(), "timestamp_ms");
}
