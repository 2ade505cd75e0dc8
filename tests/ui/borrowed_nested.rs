#[multiproc::process]
fn count(words: Vec<&str>) -> usize {
    words.len()
}

fn main() {}
