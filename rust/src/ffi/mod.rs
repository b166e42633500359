//! C boundary (being written)
