//! Config loading: `Config::from_yaml` with `${VAR}` and `${VAR:default}`
//! substitution from the environment.
//!
//! Input (structured): either raw YAML text, or a template (literal text and
//! variable references, some set in the environment, some not, some with a
//! default) put in a YAML document as a string, at the top level or nested.
//!
//! Checked besides "no crash": a template's value is its text with each
//! reference replaced by the variable's value or else its default (one
//! pass: a value holding `${` is not expanded again); a string that is one
//! reference alone takes the YAML type of what replaced it; a reference to
//! an unset variable with no default is an error naming the key's full
//! path; a loaded config can be validated, read and shown redacted.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use shimeji::Config;

/// Variables the template can name: (name, value in the environment).
const VARS: &[(&str, Option<&str>)] = &[
    ("SHIMEJI_FUZZ_PORT", Some("8123")),
    ("SHIMEJI_FUZZ_WORDS", Some("two words")),
    ("SHIMEJI_FUZZ_EMPTY", Some("")),
    ("SHIMEJI_FUZZ_TRUE", Some("true")),
    ("SHIMEJI_FUZZ_LIST", Some("[1, 2]")),
    ("SHIMEJI_FUZZ_NESTED", Some("${SHIMEJI_FUZZ_PORT}")),
    ("SHIMEJI_FUZZ_COLON", Some("a:b")),
    ("SHIMEJI_FUZZ_UNSET", None),
    ("SHIMEJI_FUZZ_ALSO_UNSET", None),
];

#[derive(Arbitrary, Debug)]
enum Segment {
    Text(String),
    Var { var: u8, default: Option<String> },
}

#[derive(Arbitrary, Debug)]
enum Input {
    Raw(String),
    Template {
        segments: Vec<Segment>,
        nested: bool,
    },
}

fn set_environment() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for (name, value) in VARS {
            match value {
                Some(v) => std::env::set_var(name, v),
                None => std::env::remove_var(name),
            }
        }
    });
}

/// Exercises everything a runner does with a loaded config.
fn use_config(config: &Config) {
    let _ = config.validate();
    let _ = format!("{config:?}");
    let _ = Value::Object(config.redacted()).to_string();
    let _ = (
        config.max_workers(),
        config.rpc_timeout(),
        config.drain_timeout(),
    );
    let _ = (
        config.amqp_uri(),
        config.metrics_address(),
        config.parent_calls_tracked(),
    );
}

/// What a template must become: `Ok(value)`, `Err(())` when it names an
/// unset variable with no default, `None` when it is outside the model
/// (a literal `${`, or a default holding `}`).
fn expected(segments: &[Segment]) -> (String, Option<Result<Value, ()>>) {
    let mut text = String::new();
    let mut out = String::new();
    let mut refs = 0;
    let mut missing = false;
    let mut modelled = true;
    let segments: Vec<&Segment> = segments
        .iter()
        .filter(|s| !matches!(s, Segment::Text(t) if t.is_empty()))
        .collect();
    for segment in &segments {
        match segment {
            Segment::Text(t) => {
                text.push_str(t);
                out.push_str(t);
            }
            Segment::Var { var, default } => {
                refs += 1;
                let (name, value) = VARS[*var as usize % VARS.len()];
                text.push_str("${");
                text.push_str(name);
                if let Some(d) = default {
                    modelled &= !d.contains('}');
                    text.push(':');
                    text.push_str(d);
                }
                text.push('}');
                match (value, default) {
                    (Some(v), _) => out.push_str(v),
                    (None, Some(d)) => out.push_str(d),
                    (None, None) => missing = true,
                }
            }
        }
    }
    modelled &= text.matches("${").count() == refs;
    if !modelled {
        return (text, None);
    }
    if missing {
        return (text, Some(Err(())));
    }
    let whole = refs == 1 && segments.len() == 1;
    let value = if !whole {
        Value::String(out)
    } else {
        serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&out)
            .ok()
            .and_then(|v| serde_json::to_value(v).ok())
            .filter(|v| !v.is_object() && !v.is_array())
            .unwrap_or(Value::String(out))
    };
    (text, Some(Ok(value)))
}

fuzz_target!(|input: Input| {
    set_environment();
    match input {
        Input::Raw(text) => {
            if let Ok(config) = Config::from_yaml(&text) {
                use_config(&config);
            }
        }
        Input::Template { segments, nested } => {
            let (text, want) = expected(&segments);
            let doc = if nested {
                json!({ "outer": { "k": [text] } })
            } else {
                json!({ "k": text })
            };
            let yaml = serde_yaml_ng::to_string(&doc).expect("a YAML document");
            let got = Config::from_yaml(&yaml);
            if let Ok(config) = &got {
                use_config(config);
            }
            let Some(want) = want else { return };
            match (got, want) {
                (Ok(config), Ok(want)) => {
                    let got = if nested {
                        config.get::<Value>("outer").expect("outer").expect("outer")["k"][0].clone()
                    } else {
                        config.get::<Value>("k").expect("k").unwrap_or(Value::Null)
                    };
                    assert_eq!(got, want, "template {text:?}");
                }
                (Err(e), Err(())) => {
                    assert_eq!(e.key, if nested { "outer.k" } else { "k" });
                    assert!(e.message.contains("not set"), "{}", e.message);
                }
                (Ok(_), Err(())) => {
                    panic!("{text:?}: an unset variable with no default was accepted")
                }
                (Err(e), Ok(want)) => panic!("{text:?}: refused ({e}), expected {want}"),
            }
        }
    }
});
