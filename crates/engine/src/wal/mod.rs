//! The write-ahead log. (Being written.)
