//! Trigger matching cost with 1, 100 and 1,000 flows and messages of growing length.
//! Run with `make bench` (or `cargo bench -p dash-core --bench triggers`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark set-up fails loudly

use std::fmt::Write;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dash_core::flow::{Bundle, Capabilities};

/// A document with `flows` flows, each with three keywords (word, prefix, contains
/// modes) and, for every tenth flow, a regex trigger.
fn document(flows: usize) -> String {
    let mut doc = String::new();
    for i in 0..flows {
        writeln!(doc, "[[flows]]\nid = \"f{i}\"").unwrap();
        writeln!(doc, "triggers = [").unwrap();
        writeln!(
            doc,
            "  {{ keywords = [\"producto{i}\", \"consulta {i}\"] }},"
        )
        .unwrap();
        writeln!(
            doc,
            "  {{ keywords = [\"pedido{i}x\"], match = \"prefix\" }},"
        )
        .unwrap();
        writeln!(doc, "  {{ keywords = [\"zq{i}\"], match = \"contains\" }},").unwrap();
        if i % 10 == 0 {
            writeln!(doc, "  {{ regex = \"(?i)^factura\\\\s+{i}-\\\\d+$\" }},").unwrap();
        }
        writeln!(
            doc,
            "]\nsteps = [{{ id = \"a\", kind = \"end\", text = \"ok\" }}]"
        )
        .unwrap();
    }
    doc
}

/// A message of about `len` bytes that matches no trigger (the whole text is scanned).
fn message(len: usize) -> String {
    let words = [
        "hola", "quería", "saber", "si", "tienen", "envíos", "al", "interior", "gracias",
    ];
    let mut text = String::new();
    let mut i = 0;
    while text.len() < len {
        text.push_str(words[i % words.len()]);
        text.push(' ');
        i += 1;
    }
    text.truncate(len);
    text
}

fn matching(c: &mut Criterion) {
    let mut group = c.benchmark_group("trigger_match");
    group
        .sample_size(30)
        .measurement_time(std::time::Duration::from_secs(2))
        .warm_up_time(std::time::Duration::from_millis(500));
    for flows in [1, 100, 1000] {
        let bundle = Bundle::from_text(&document(flows), 1, Capabilities::CURRENT).unwrap();
        // Sanity: the last flow's keyword is found, a miss is a miss.
        assert_eq!(
            bundle.trigger(&format!("hola producto{}", flows - 1)),
            Some(flows - 1)
        );
        for len in [16, 256, 4096] {
            let text = message(len);
            assert_eq!(bundle.trigger(&text), None);
            group.throughput(Throughput::Bytes(len as u64));
            group.bench_with_input(
                BenchmarkId::new(format!("{flows}_flows"), len),
                &text,
                |b, text| {
                    b.iter(|| bundle.trigger(black_box(text)));
                },
            );
        }
    }
    group.finish();
}

fn parts(c: &mut Criterion) {
    let mut group = c.benchmark_group("parts");
    group
        .sample_size(20)
        .measurement_time(std::time::Duration::from_secs(1));
    let text = message(4096);
    group.bench_function("fold_4096", |b| {
        b.iter(|| dash_core::flow::text::fold(black_box(&text)))
    });
    let set = regex::RegexSet::new([r"(?i)^factura\s+0-\d+$"]).unwrap();
    group.bench_function("regexset_4096", |b| {
        b.iter(|| set.matches(black_box(&text)).matched_any())
    });
    group.finish();
}

fn compiling(c: &mut Criterion) {
    let mut group = c.benchmark_group("compile");
    group
        .sample_size(10)
        .measurement_time(std::time::Duration::from_secs(3));
    for flows in [1, 100, 1000] {
        let doc = document(flows);
        group.bench_with_input(BenchmarkId::from_parameter(flows), &doc, |b, doc| {
            b.iter(|| Bundle::from_text(black_box(doc), 1, Capabilities::CURRENT).unwrap());
        });
    }
    group.finish();
}

criterion_group!(benches, matching, parts, compiling);
criterion_main!(benches);
