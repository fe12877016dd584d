//! xferd (placeholder).
