//! Counts in messages people read: "1 job", "2 jobs", never "1 jobs".

/// `n` followed by `one` when `n` is 1 and by `many` otherwise ("0 jobs", "1 job").
pub fn plural(n: impl Into<u128>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::plural;

    #[test]
    fn one_is_singular_and_everything_else_plural() {
        assert_eq!(plural(0u32, "job", "jobs"), "0 jobs");
        assert_eq!(plural(1u64, "job", "jobs"), "1 job");
        assert_eq!(plural(2usize as u64, "job", "jobs"), "2 jobs");
        assert_eq!(plural(1u8, "entry", "entries"), "1 entry");
    }
}
