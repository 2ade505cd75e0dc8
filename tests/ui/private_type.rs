mod workers {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Job {
        id: u32,
    }

    // The argument type must be at least as visible as the function.
    #[multiproc::process]
    pub fn work(job: Job) -> u32 {
        job.id
    }
}

fn main() {}
