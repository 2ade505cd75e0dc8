#[multiproc::process]
fn first<'a>(words: Vec<String>) -> usize {
    words.len()
}

fn main() {}
