//! In-process tests, one binary: `xferd::serve` on 127.0.0.1:0 over a temporary data
//! directory ([`server`]), driven over real TLS by the test kit's raw protocol client
//! (`xfer_e2e::RawConn`, shared with the end-to-end tests).

mod chat;
mod server;
mod transfer;
