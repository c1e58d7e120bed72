use shimeji::prelude::*;

struct Greeter;

#[service(name = "greeter")]
impl Greeter {
    #[rpc(timeout = 5)]
    async fn hello(&self, name: String) -> String {
        format!("Hello, {name}!")
    }
}

fn main() {}
