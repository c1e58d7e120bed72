use shimeji::prelude::*;

#[derive(Debug)]
struct MyError;

impl std::fmt::Display for MyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("my error")
    }
}

impl std::error::Error for MyError {}

#[derive(Dependencies)]
struct Greeter;

#[service(name = "greeter")]
impl Greeter {
    #[rpc]
    async fn hello(&self, name: String) -> Result<String, MyError> {
        if name.is_empty() {
            return Err(MyError);
        }
        Ok(format!("Hello, {name}!"))
    }
}

fn main() {}
