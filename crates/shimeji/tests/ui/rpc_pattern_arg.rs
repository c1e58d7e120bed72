use shimeji::prelude::*;

struct Adder;

#[service(name = "adder")]
impl Adder {
    #[rpc]
    async fn add(&self, (a, b): (i32, i32)) -> i32 {
        a + b
    }
}

fn main() {}
