//! The internal gRPC APIs of CLS (proto files under `proto/`): the generated tonic/prost code,
//! the conversions between protobuf messages and `cls-domain` types, the optional shared-token
//! authentication between services, and a server builder that adds `grpc.health.v1` and
//! server reflection to every service.

pub mod auth;
pub mod client;
pub mod convert;
pub mod server;
pub mod trace;

/// `cls.publisher.v1`: the event-publisher's API.
pub mod publisher {
    #![allow(unreachable_pub, missing_debug_implementations, clippy::all)]
    tonic::include_proto!("cls.publisher.v1");
}

/// `cls.status.v1`: the status-aggregator's API.
pub mod status {
    #![allow(unreachable_pub, missing_debug_implementations, clippy::all)]
    tonic::include_proto!("cls.status.v1");
}

/// `cls.scheduler.v1`: the reconcile-scheduler's API.
pub mod scheduler {
    #![allow(unreachable_pub, missing_debug_implementations, clippy::all)]
    tonic::include_proto!("cls.scheduler.v1");
}

/// The encoded descriptors of every CLS proto file, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("cls_descriptor");
