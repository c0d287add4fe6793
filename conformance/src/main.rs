//! headroom-conformance: the fixture tools, resources and prompts the official
//! MCP conformance suite expects, served over Streamable HTTP by the headroom
//! server library. Not built yet.

fn main() {
    eprintln!("headroom-conformance: not implemented yet");
    std::process::exit(3);
}
