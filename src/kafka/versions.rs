//! The APIs and versions keel advertises, and ApiVersions itself.
//!
//! Only what works is advertised: clients pick min(their max, ours), and several
//! (kafka-python 2.x, aiokafka ≤ 0.12) infer a whole broker version from these maxima.

use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};

use super::errors::ErrorCode;
use super::frame::{self, FrameError};
use super::wire::{self, Answer, Request};

/// One advertised API: its versions and its `api` label in the metrics.
pub struct Advertised {
    pub key: ApiKey,
    pub min: i16,
    pub max: i16,
    pub label: &'static str,
}

/// Every API keel answers, with the versions it answers.
pub const APIS: &[Advertised] = &[
    Advertised { key: ApiKey::Produce, min: 3, max: 7, label: "produce" },
    Advertised { key: ApiKey::Fetch, min: 4, max: 11, label: "fetch" },
    Advertised { key: ApiKey::ListOffsets, min: 1, max: 4, label: "list_offsets" },
    Advertised { key: ApiKey::Metadata, min: 0, max: 8, label: "metadata" },
    Advertised { key: ApiKey::ApiVersions, min: 0, max: 3, label: "api_versions" },
    Advertised { key: ApiKey::CreateTopics, min: 2, max: 5, label: "create_topics" },
    Advertised { key: ApiKey::DeleteTopics, min: 1, max: 5, label: "delete_topics" },
    Advertised { key: ApiKey::DescribeConfigs, min: 1, max: 4, label: "describe_configs" },
    Advertised { key: ApiKey::OffsetForLeaderEpoch, min: 2, max: 4, label: "offset_for_leader_epoch" },
    Advertised { key: ApiKey::FindCoordinator, min: 0, max: 3, label: "find_coordinator" },
    Advertised { key: ApiKey::JoinGroup, min: 0, max: 6, label: "join_group" },
    Advertised { key: ApiKey::SyncGroup, min: 0, max: 4, label: "sync_group" },
    Advertised { key: ApiKey::Heartbeat, min: 0, max: 4, label: "heartbeat" },
    Advertised { key: ApiKey::LeaveGroup, min: 0, max: 4, label: "leave_group" },
    Advertised { key: ApiKey::OffsetCommit, min: 2, max: 8, label: "offset_commit" },
    Advertised { key: ApiKey::OffsetFetch, min: 1, max: 7, label: "offset_fetch" },
    Advertised { key: ApiKey::DescribeGroups, min: 0, max: 5, label: "describe_groups" },
    Advertised { key: ApiKey::ListGroups, min: 0, max: 4, label: "list_groups" },
    Advertised { key: ApiKey::InitProducerId, min: 0, max: 3, label: "init_producer_id" },
];

/// The `api` label of requests for an API keel does not serve, or whose frame could not be
/// read at all (the connection is closed either way).
pub const UNSUPPORTED_LABEL: &str = "unsupported";

/// Every value of the `api` label, for the metrics table.
pub const API_LABELS: &[&str] = &[
    "produce",
    "fetch",
    "list_offsets",
    "metadata",
    "api_versions",
    "create_topics",
    "delete_topics",
    "describe_configs",
    "offset_for_leader_epoch",
    "find_coordinator",
    "join_group",
    "sync_group",
    "heartbeat",
    "leave_group",
    "offset_commit",
    "offset_fetch",
    "describe_groups",
    "list_groups",
    "init_producer_id",
    UNSUPPORTED_LABEL,
];

/// The advertised entry for an api key, if keel serves it at all.
pub fn advertised(api_key: i16) -> Option<&'static Advertised> {
    APIS.iter().find(|a| a.key as i16 == api_key)
}

/// The ApiVersions answer. A request newer than v3 gets `UNSUPPORTED_VERSION` in the v0
/// body, still listing every API, so that the client retries with a version we know
/// (its header is always v0: the client cannot know which version we will answer in).
pub fn api_versions_response(request_version: i16) -> (ApiVersionsResponse, i16, ErrorCode) {
    let api_keys = APIS
        .iter()
        .map(|a| ApiVersion::default().with_api_key(a.key as i16).with_min_version(a.min).with_max_version(a.max))
        .collect();
    let max = advertised(ApiKey::ApiVersions as i16).map_or(0, |a| a.max);
    let (version, error) =
        if request_version > max { (0, ErrorCode::UnsupportedVersion) } else { (request_version, ErrorCode::None) };
    let response = ApiVersionsResponse::default().with_error_code(error.code()).with_api_keys(api_keys);
    (response, version, error)
}

/// Answers ApiVersions, in the v0 form when the request is too new for us.
pub fn answer(req: &Request) -> Result<Answer, FrameError> {
    let (response, version, error) = api_versions_response(req.version);
    wire::answer(frame::response(ApiKey::ApiVersions, req.correlation_id, version, &response), error)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every advertised range is one the codec can decode and encode.
    #[test]
    fn advertised_versions_are_within_the_codecs() {
        for api in APIS {
            let valid = api.key.valid_versions();
            assert!(
                valid.min <= api.min && api.max <= valid.max,
                "{:?} {}..{} outside {valid}",
                api.key,
                api.min,
                api.max
            );
            assert!(API_LABELS.contains(&api.label));
        }
        assert_eq!(API_LABELS.len(), APIS.len() + 1);
    }

    #[test]
    fn a_too_new_api_versions_request_is_answered_in_v0_with_error_35() {
        let (response, version, error) = api_versions_response(4);
        assert_eq!((version, error.code()), (0, 35));
        assert_eq!(response.api_keys.len(), APIS.len());
        let (_, version, error) = api_versions_response(3);
        assert_eq!((version, error), (3, ErrorCode::None));
    }
}
