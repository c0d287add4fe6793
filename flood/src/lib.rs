//! headroom-flood: Load generator that finds a server's breaking point and sets it beside the prediction.
