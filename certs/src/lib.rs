//! TLS identity (placeholder while the crate is written).
