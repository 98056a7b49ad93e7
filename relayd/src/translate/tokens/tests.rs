//! Tests of the token estimate: the count's behaviour, and the byte scan agreeing with the
//! visitor on fixtures and random bodies.

use super::*;

#[test]
fn varies_with_content_and_is_never_zero() {
    let small = count_tokens(br#"{"messages":[{"role":"user","content":"hi"}]}"#).unwrap_or(0);
    let large = count_tokens(
        br#"{"messages":[{"role":"user","content":"hi there, how are you doing today?"}]}"#,
    )
    .unwrap_or(0);
    assert!(small > 0 && large > small, "{small} {large}");
    assert!(count_tokens(b"{}").unwrap_or(0) >= 1);
    let with_tools = count_tokens(
        br#"{"messages":[{"role":"user","content":"hi"}],"tools":[{"name":"Bash","input_schema":{"type":"object"}}]}"#,
    )
    .unwrap_or(0);
    assert!(with_tools > small);
    assert!(count_tokens(b"{not json").is_err());
    assert_eq!(text_tokens("日本語"), 3);
}

#[test]
fn base64_images_cost_a_flat_amount() {
    let data = "A".repeat(400_000);
    let body = format!(
        r#"{{"messages":[{{"role":"user","content":[{{"type":"image","source":{{"type":"base64","media_type":"image/png","data":"{data}"}}}}]}}]}}"#
    );
    let n = count_tokens(body.as_bytes()).unwrap_or(0);
    assert!((IMAGE_TOKENS..IMAGE_TOKENS + 50).contains(&n), "{n}");
}

/// The fast count must be the visitor's count (or its error) for every body.
fn assert_same(body: &[u8]) {
    assert_eq!(
        count_tokens(body),
        count_with_serde(body),
        "{}",
        String::from_utf8_lossy(&body[..body.len().min(300)])
    );
}

#[test]
fn fast_count_equals_visitor_on_fixtures() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/claude-code");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).expect("fixtures dir") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("readable");
        let file: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        let body = serde_json::to_vec(&file["body"]).expect("serializable");
        assert_same(&body);
        // ... and from the scan itself, not from the fallback.
        let raw: RawBody<'_> = serde_json::from_slice(&body).expect("parses");
        let scanned = estimate(raw.system, raw.messages, raw.tools);
        assert_eq!(scanned.map(Ok), Some(count_with_serde(&body)));
        // The same body pretty-printed: whitespace everywhere the scanner looks.
        assert_same(&serde_json::to_vec_pretty(&file["body"]).expect("serializable"));
        seen += 1;
    }
    assert!(seen >= 6, "{seen}");
}

#[test]
fn fast_count_equals_visitor_on_edge_cases() {
    let base64 = "QUJD".repeat(100);
    let spaced = format!("{} {}", "A".repeat(100), "A".repeat(300));
    let late_space = format!("{} {}", "A".repeat(256), "A".repeat(10));
    let bodies: Vec<String> = vec![
        r#"{}"#.to_owned(),
        r#"{"messages":null,"tools":null,"system":null}"#.to_owned(),
        r#"{"messages":[],"tools":[]}"#.to_owned(),
        r#" { "system" : "s" , "messages" : [ { "role" : "user" , "content" : [ ] } ] } "#
            .to_owned(),
        r#"{"system":[{"type":"text","text":"a\"b\\c\/d\b\f\n\r\t","cache_control":{"type":"ephemeral"}}]}"#.to_owned(),
        r#"{"messages":[{"role":"user","content":"\u00e9\u65e5\u0041\ud83d\ude00 é日本語😀 \u0000"}]}"#.to_owned(),
        r#"{"messages":[{"role":"user","content":"\ud83d"}]}"#.to_owned(),
        r#"{"messages":[{"role":"user","content":"\ud83d\u0041"}]}"#.to_owned(),
        r#"{"messages":[{"role":"user","content":"\ude00"}]}"#.to_owned(),
        r#"{"messages":[{"role":"user","content":"\ud83dx"}]}"#.to_owned(),
        r#"{"messages":[{"role":"user","content":"ok"}],"tools":[{"input_schema":{"type":"\udc00"}}]}"#.to_owned(),
        r#"{"messages":[1,-2,3.5,-0.25,true,false,null,[],{},"",1e5,2E-3,1e999]}"#.to_owned(),
        r#"{"messages":[1e5]}"#.to_owned(),
        r#"{"messages":[1e999]}"#.to_owned(),
        format!(r#"{{"messages":[{}]}}"#, "9".repeat(400)),
        format!(r#"{{"messages":[{}]}}"#, "9".repeat(64)),
        format!(r#"{{"messages":[{}]}}"#, "9".repeat(65)),
        format!(r#"{{"messages":[{}1{}]}}"#, "[".repeat(99), "]".repeat(99)),
        format!(r#"{{"messages":[{}1{}]}}"#, "[".repeat(130), "]".repeat(130)),
        format!(r#"{{"messages":[{}1{}]}}"#, "{\"a\":".repeat(126), "}".repeat(126)),
        format!(r#"{{"messages":[{{"data":"{base64}"}},{{"data":"{spaced}"}},{{"data":"{late_space}"}}]}}"#),
        format!(r#"{{"messages":[{{"data":"\/{base64}"}},{{"data":"A\u0020{base64}"}},{{"data":"{}\n"}}]}}"#, "A".repeat(255)),
        format!(r#"{{"messages":[{{"data":{{"data":"{base64}"}}}},{{"data":["{base64}"]}},{{"d\u0061ta":"{base64}"}}]}}"#),
        r#"{"messages":[{"ty\u0070e":"xxxxxxxx","cache_\u0063ontrol":"y","k\"ey":"v","日本":"語"}]}"#.to_owned(),
        r#"{"messages":[{"type":{"deep":[1,2,"\ud800"]},"cache_control":1e999}]}"#.to_owned(),
        r#"{"messages":[{"a":1,"a":2}],"model":"\ud800","x":1e999}"#.to_owned(),
        r#"{"messages":[],"messages":[]}"#.to_owned(),
        r#"{"messages":"text"}"#.to_owned(),
        r#"{"messages":[{"role":"user"}],}"#.to_owned(),
        r#"{"messages":[{"role":"user","content":"x\u001"}]}"#.to_owned(),
        "{\"messages\":[\"tab\there\"]}".to_owned(),
        r#"[1,2]"#.to_owned(),
        r#"{"messages":[{"role":"user","content":"x"}]} trailing"#.to_owned(),
        "".to_owned(),
    ];
    for body in &bodies {
        assert_same(body.as_bytes());
    }
    // Long non-ASCII runs: every byte lane of the word counters fills up many times over.
    for text in ["é", "日本語", "😀", "aé日😀"] {
        for repeat in [255, 1_000, 5_000] {
            let body = format!(r#"{{"messages":["{}x"]}}"#, text.repeat(repeat));
            assert_same(body.as_bytes());
        }
    }
    assert_eq!(
        count_tokens(format!(r#"{{"messages":["{}"]}}"#, "é".repeat(5_000)).as_bytes()),
        Ok(5_000 + PER_MESSAGE)
    );
    // Invalid UTF-8 inside and outside the counted values.
    assert_same(b"{\"messages\":[\"\xff\"]}");
    assert_same(b"{\"model\":\"\xff\",\"messages\":[\"a\"]}");
}

/// Random bodies from a small alphabet of JSON pieces, escapes and multi-byte text.
#[test]
fn fast_count_equals_visitor_on_random_bodies() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        usize::try_from(seed % n as u64).unwrap_or(0)
    };
    let pieces = [
        "a",
        "abcdefgh",
        " ",
        "é",
        "日本",
        "😀",
        "\\n",
        "\\\"",
        "\\\\",
        "\\/",
        "\\u00e9",
        "\\u0020",
        "\\ud83d\\ude00",
        "\\u65e5",
        "xyz0123456789",
        "\u{7f}",
        "\u{80}",
    ];
    for _ in 0..2_000 {
        let mut body = String::from(r#"{"system":"#);
        random_value(&mut body, &mut next, &pieces, 0);
        body.push_str(r#","messages":["#);
        for i in 0..next(4) {
            if i > 0 {
                body.push(',');
            }
            random_value(&mut body, &mut next, &pieces, 0);
        }
        body.push_str("]}");
        assert_same(body.as_bytes());
    }
}

fn random_value(
    out: &mut String,
    next: &mut impl FnMut(usize) -> usize,
    pieces: &[&str],
    depth: usize,
) {
    let choice = if depth > 3 { next(4) } else { next(7) };
    match choice {
        0 => out.push_str(["1", "-2.5", "true", "null", "false", "0"][next(6)]),
        1..=3 => random_string(out, next, pieces),
        4 => {
            out.push('[');
            for i in 0..next(4) {
                if i > 0 {
                    out.push(',');
                }
                random_value(out, next, pieces, depth + 1);
            }
            out.push(']');
        }
        _ => {
            out.push('{');
            for i in 0..next(4) {
                if i > 0 {
                    out.push(',');
                }
                match next(5) {
                    0 => out.push_str(r#""data""#),
                    1 => out.push_str(r#""type""#),
                    2 => out.push_str(r#""cache_control""#),
                    _ => random_string(out, next, pieces),
                }
                out.push(':');
                random_value(out, next, pieces, depth + 1);
            }
            out.push('}');
        }
    }
}

fn random_string(out: &mut String, next: &mut impl FnMut(usize) -> usize, pieces: &[&str]) {
    out.push('"');
    // Sometimes long enough for the image rule, in base64-like runs.
    if next(4) == 0 {
        out.push_str(&"QUJD".repeat(next(100)));
    }
    for _ in 0..next(12) {
        out.push_str(pieces[next(pieces.len())]);
    }
    out.push('"');
}
