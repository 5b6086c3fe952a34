//! InitProducerId (v0–3) for idempotent producers. keel has no transactions: a request that
//! names a transactional id is answered INVALID_REQUEST, which clients report as it is.

use std::sync::Arc;

use kafka_protocol::messages::ProducerId;
use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;

use super::backend::{BackendError, KafkaBackend, ProducerSession};
use super::errors::code_of;
use super::frame::FrameError;
use super::wire::{Answer, Request};

/// The first version whose request carries the producer's current id and epoch (KIP-360).
const BUMP_FROM_VERSION: i16 = 3;

pub async fn init_producer_id(backend: Arc<dyn KafkaBackend>, mut req: Request) -> Result<Answer, FrameError> {
    let request: InitProducerIdRequest = req.decode()?;
    let result = if request.transactional_id.is_some() {
        let why = "keel has no transactions: produce without a transactional.id (enable.idempotence alone works)";
        Err(BackendError::InvalidRequest(why.into()))
    } else {
        let current = if req.version >= BUMP_FROM_VERSION {
            ProducerSession { producer_id: request.producer_id.0, epoch: request.producer_epoch }
        } else {
            ProducerSession::NONE
        };
        backend.init_producer_id(current).await
    };
    let code = code_of(&result);
    let session = result.unwrap_or(ProducerSession::NONE);
    let response = InitProducerIdResponse::default()
        .with_error_code(code.code())
        .with_producer_id(ProducerId(session.producer_id))
        .with_producer_epoch(session.epoch);
    req.answer(&response, code)
}
