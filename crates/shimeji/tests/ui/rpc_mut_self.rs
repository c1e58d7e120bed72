use shimeji::prelude::*;

struct Counter;

#[service(name = "counter")]
impl Counter {
    #[rpc]
    async fn increment(&mut self, by: u64) -> u64 {
        by
    }
}

fn main() {}
