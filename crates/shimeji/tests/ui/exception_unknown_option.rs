use shimeji::prelude::*;

#[derive(Debug, Exception)]
#[exception(colour = "red")]
struct MyError;

impl std::fmt::Display for MyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("my error")
    }
}

fn main() {}
