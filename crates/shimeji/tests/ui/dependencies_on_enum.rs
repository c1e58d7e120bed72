use shimeji::prelude::*;

#[derive(Dependencies)]
enum Greeter {
    Polite { events: EventDispatcher },
    Rude,
}

fn main() {}
