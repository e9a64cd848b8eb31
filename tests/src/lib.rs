//! Helpers shared by the integration and boot tests.
