use shimeji::prelude::*;

struct Greeter;

#[service(name = "greeter")]
impl Greeter {
    #[rpc]
    fn hello(&self, name: String) -> String {
        format!("Hello, {name}!")
    }
}

fn main() {}
