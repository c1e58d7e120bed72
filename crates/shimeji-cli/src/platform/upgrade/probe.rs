//! What `upgrade` asks a new instance over HTTP, at the address its record
//! names: `/health/ready` (is it ready?) and `/metrics` (its calls by
//! outcome, for the error rate).

use reqwest::StatusCode;
use std::time::Duration;

/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The HTTP client of the probes: plain HTTP, no proxy, no redirect. (Its
/// TLS settings, which plain HTTP never uses, are handed in ready-made, as
/// this build's reqwest has no TLS provider of its own.)
pub fn client() -> Result<reqwest::Client, String> {
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("cannot set TLS up: {e}"))?
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(PROBE_TIMEOUT)
        .timeout(PROBE_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| format!("cannot set the HTTP client up: {e}"))
}

/// What `/health/ready` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// 200.
    Ready,
    /// 404: the address serves no readiness endpoint.
    NoEndpoint,
    /// Anything else, and why.
    NotReady(String),
}

/// Asks `http://<address>/health/ready`.
pub async fn readiness(client: &reqwest::Client, address: &str) -> Readiness {
    match client
        .get(format!("http://{address}/health/ready"))
        .send()
        .await
    {
        Ok(answer) if answer.status() == StatusCode::OK => Readiness::Ready,
        Ok(answer) if answer.status() == StatusCode::NOT_FOUND => Readiness::NoEndpoint,
        Ok(answer) => Readiness::NotReady(format!("answered {}", answer.status())),
        Err(e) => Readiness::NotReady(format!("no answer: {}", innermost(&e))),
    }
}

/// Calls of one service, by outcome, as its `/metrics` counts them
/// (`shimeji_entrypoint_calls_total{service, entrypoint, outcome}`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Calls {
    /// Every run.
    pub total: f64,
    /// Runs with an outcome other than `ok` (expected errors included).
    pub errors: f64,
}

impl Calls {
    /// The calls between `self` and the later reading `later`.
    pub fn since(&self, later: &Calls) -> Calls {
        Calls {
            total: (later.total - self.total).max(0.0),
            errors: (later.errors - self.errors).max(0.0),
        }
    }

    /// Errors per call; `None` with no call.
    pub fn error_rate(&self) -> Option<f64> {
        (self.total > 0.0).then(|| self.errors / self.total)
    }
}

/// The calls of `service` from `http://<address>/metrics`; `Ok(None)` when
/// the address serves no metrics (404).
pub async fn calls(
    client: &reqwest::Client,
    address: &str,
    service: &str,
) -> Result<Option<Calls>, String> {
    let url = format!("http://{address}/metrics");
    let answer = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("{url}: no answer: {}", innermost(&e)))?;
    match answer.status() {
        StatusCode::OK => {}
        StatusCode::NOT_FOUND => return Ok(None),
        status => return Err(format!("{url} answered {status}")),
    }
    let text = answer
        .text()
        .await
        .map_err(|e| format!("{url}: {}", innermost(&e)))?;
    Ok(Some(parse_calls(&text, service)))
}

/// Sums `shimeji_entrypoint_calls_total` of `service` in an OpenMetrics (or
/// Prometheus text) exposition.
pub fn parse_calls(text: &str, service: &str) -> Calls {
    let mut calls = Calls::default();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("shimeji_entrypoint_calls_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once('}') else {
            continue;
        };
        let Some(value) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        let labels = parse_labels(labels);
        let label = |name: &str| {
            labels
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        if label("service") != Some(service) {
            continue;
        }
        calls.total += value;
        if label("outcome") != Some("ok") {
            calls.errors += value;
        }
    }
    calls
}

/// `k="v",k2="v2"` as pairs (values unescaped).
fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let name: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if name.is_empty() || chars.next() != Some('=') || chars.next() != Some('"') {
            return labels;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.push((name.trim().to_string(), value));
    }
}

/// The innermost cause of `e`: what went wrong.
fn innermost(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_of_one_service_are_summed() {
        let text = "\
# TYPE shimeji_entrypoint_calls counter
shimeji_entrypoint_calls_total{service=\"notes\",entrypoint=\"get\",outcome=\"ok\"} 90
shimeji_entrypoint_calls_total{service=\"notes\",entrypoint=\"get\",outcome=\"NoteError\"} 6
shimeji_entrypoint_calls_total{service=\"notes\",entrypoint=\"add\",outcome=\"other\"} 4
shimeji_entrypoint_calls_total{service=\"users\",entrypoint=\"get\",outcome=\"other\"} 50
shimeji_entrypoint_calls_created{service=\"notes\",entrypoint=\"get\",outcome=\"ok\"} 1.7e9
# EOF
";
        let calls = parse_calls(text, "notes");
        assert_eq!(calls.total, 100.0);
        assert_eq!(calls.errors, 10.0);
        assert_eq!(calls.error_rate(), Some(0.1));
        let later = Calls {
            total: 150.0,
            errors: 10.0,
        };
        assert_eq!(calls.since(&later).error_rate(), Some(0.0));
        assert_eq!(Calls::default().error_rate(), None);
        assert_eq!(parse_calls(text, "nobody"), Calls::default());
    }

    #[test]
    fn labels_are_unescaped() {
        let labels = parse_labels(r#"a="x\"y",b="z\\", c="""#);
        assert_eq!(
            labels,
            vec![
                ("a".into(), "x\"y".into()),
                ("b".into(), "z\\".into()),
                ("c".into(), String::new())
            ]
        );
    }
}
