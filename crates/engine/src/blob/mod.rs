//! Blob files for large values. (Being written.)
