//! `limit` and `offset` of a paginated listing: parsed against the configured page size, and where the next page starts.

use super::error::ApiError;

/// A valid page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    pub limit: u32,
    pub offset: u32,
}

impl Paging {
    /// `limit` defaults to 20 (or `max` when smaller) and must be 1..=`max`; `offset` defaults to 0.
    pub fn parse(limit: Option<u32>, offset: Option<u32>, max: u32) -> Result<Self, ApiError> {
        let limit = limit.unwrap_or(20.min(max));
        if limit == 0 || limit > max {
            return Err(ApiError::invalid_field("limit", "range", format!("must be between 1 and {max}")));
        }
        Ok(Self { limit, offset: offset.unwrap_or(0) })
    }

    /// The offset of the next page after `returned` items of `total`; `None` on the last page.
    pub fn next_offset(&self, returned: usize, total: u64) -> Option<u32> {
        let next = self.offset.saturating_add(returned as u32);
        (u64::from(next) < total && returned > 0).then_some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::Paging;

    #[test]
    fn pages() {
        assert_eq!(Paging::parse(None, None, 100).unwrap(), Paging { limit: 20, offset: 0 });
        assert_eq!(Paging::parse(None, None, 5).unwrap().limit, 5);
        assert!(Paging::parse(Some(0), None, 100).is_err() && Paging::parse(Some(101), None, 100).is_err());
        let p = Paging { limit: 2, offset: 2 };
        assert_eq!((p.next_offset(2, 5), p.next_offset(1, 3), p.next_offset(0, 9)), (Some(4), None, None));
    }
}
