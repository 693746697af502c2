//! Shared harness lives in tests/tests/common; this crate only hosts end-to-end tests.
