//! headroom-tui: headroom top: the live dashboard (state, update and rendering apart).
