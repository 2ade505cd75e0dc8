struct Counter(u32);

impl Counter {
    #[multiproc::process]
    fn bump(&mut self) -> u32 {
        self.0 + 1
    }
}

fn main() {}
