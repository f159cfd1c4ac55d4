//! Sorted table files. (Being written.)
