//! birkhoff facade (work in progress).
