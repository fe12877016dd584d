//! xfer (placeholder).
