//! The numbers that name things, as types: a node, a Raft group, a term, a log index, a
//! record offset. Each is a `u64` underneath, but a function taking a `GroupId` does not
//! accept a `NodeId`, so a swapped argument does not compile.

use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl $name {
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }

        impl From<$name> for u64 {
            fn from(id: $name) -> u64 {
                id.0
            }
        }
    };
}

id_type!(
    /// A node of the cluster; 0 is never a valid id.
    NodeId
);
id_type!(
    /// A Raft group hosted by the cluster's nodes: 0 is the metadata group, every
    /// partition of every topic has a group of its own.
    GroupId
);
id_type!(
    /// A Raft term (the logical clock of elections, Raft §5.1).
    Term
);
id_type!(
    /// The position of an entry in a Raft log; the first entry of a log is 1.
    Index
);
id_type!(
    /// The position of a record in a partition: dense, 0 for the first record, never reused.
    Offset
);

impl GroupId {
    /// The metadata group: topics, partitions, placement, the broker registry.
    pub const METADATA: GroupId = GroupId(0);
}
