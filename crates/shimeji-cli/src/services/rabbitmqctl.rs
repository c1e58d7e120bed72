//! The fallback: `rabbitmqctl list_queues`, run on this machine.

use std::process::Command;

/// The vhost's queues and their consumer counts from `rabbitmqctl`. The
/// error completes "… and …".
pub fn queues(vhost: &str) -> Result<Vec<(String, u64)>, String> {
    let output = Command::new("rabbitmqctl")
        .args(["list_queues", "-q", "-p", vhost, "name", "consumers"])
        .output()
        .map_err(|e| format!("rabbitmqctl cannot be run here: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let reason = stderr
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("no message");
        return Err(format!(
            "`rabbitmqctl list_queues -p {vhost}` failed ({}): {reason}",
            output.status
        ));
    }
    Ok(parse(&String::from_utf8_lossy(&output.stdout)))
}

/// The `name<TAB>consumers` lines of `rabbitmqctl list_queues -q`; lines
/// that are not are skipped.
fn parse(listing: &str) -> Vec<(String, u64)> {
    listing
        .lines()
        .filter_map(|line| {
            let mut parts = line.split('\t');
            let name = parts.next()?.trim();
            let consumers = parts.next()?.trim().parse().ok()?;
            Some((name.to_string(), consumers))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_listing() {
        assert_eq!(
            parse("rpc-greeter\t2\nevt-x\t0\nTimeout: 60.0 seconds ...\n"),
            vec![("rpc-greeter".into(), 2), ("evt-x".into(), 0)]
        );
    }
}
