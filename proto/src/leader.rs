//! Active/standby coordinators (a shared store in PostgreSQL): how a standby refuses a call,
//! and how an agent or the CLI reads that refusal to find the active coordinator.

/// Metadata key set on a standby's refusal; its value is the active coordinator's URL as
/// the lease records it (empty when no coordinator holds a live lease).
pub const LEADER_METADATA: &str = "quorum-leader";

/// The refusal a standby coordinator answers every call with.
pub fn not_leader(leader: Option<(&str, i64)>) -> tonic::Status {
    let (message, url) = match leader {
        Some((url, epoch)) => (
            format!("this coordinator is a standby, not the leader; the leader is {url} (epoch {epoch}): call it, or list every coordinator (agents: `coordinator:` in agent.yml; the CLI: QUORUM_COORDINATOR=URL,URL)"),
            url,
        ),
        None => (
            "this coordinator is a standby, not the leader, and no coordinator holds the lease now (one takes it within seconds); try again".to_string(),
            "",
        ),
    };
    let mut status = tonic::Status::unavailable(message);
    if let Ok(v) = tonic::metadata::MetadataValue::try_from(url) {
        status.metadata_mut().insert(LEADER_METADATA, v);
    }
    status
}

/// When `status` is a standby's refusal: the leader's URL it names (`Some("")` when none).
pub fn leader_hint(status: &tonic::Status) -> Option<String> {
    if status.code() != tonic::Code::Unavailable {
        return None;
    }
    let v = status.metadata().get(LEADER_METADATA)?;
    Some(v.to_str().unwrap_or_default().to_string())
}

/// Splits a list of coordinator URLs given as one string (`https://a:7443,https://b:7443`).
pub fn split_urls(s: &str) -> Vec<String> {
    s.split([',', ' '])
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_refusal_names_the_leader_and_is_read_back() {
        let s = not_leader(Some(("https://10.10.10.11:7443", 4)));
        assert_eq!(leader_hint(&s).as_deref(), Some("https://10.10.10.11:7443"));
        assert!(s.message().contains("epoch 4"), "{}", s.message());
        assert_eq!(leader_hint(&not_leader(None)).as_deref(), Some(""));
        assert_eq!(leader_hint(&tonic::Status::unavailable("stopping")), None);
        assert_eq!(
            split_urls("https://a:1, https://b:2,,"),
            vec!["https://a:1".to_string(), "https://b:2".to_string()]
        );
    }
}
