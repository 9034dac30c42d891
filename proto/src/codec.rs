//! The codec of every Quorum gRPC call: prost's encoding, with first buffers sized for
//! Quorum's messages instead of tonic's 8 KiB. Tonic allocates an encode and a decode buffer
//! for every call as it starts and keeps them for the call's life; an agent's `Session` lives
//! as long as the agent, so at 10,000 agents the default pair alone held ~160 MiB of the
//! coordinator's memory. A poll with facts is ~700 bytes; a larger message (a task with
//! certificates, a `ListAgents` of the fleet) grows its buffer as it needs.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// First size of each buffer.
const BUFFER_BYTES: usize = 1024;
/// tonic's default: how much a stream batches into one write.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// prost encoding with small first buffers (named by `build.rs` as the services' codec).
#[derive(Debug, Clone)]
pub struct LeanCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        Self { _pd: PhantomData }
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_BYTES, YIELD_THRESHOLD)
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(settings())
    }
}
