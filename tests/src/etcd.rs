//! Real etcd processes for tests (filled by the SOP work).
