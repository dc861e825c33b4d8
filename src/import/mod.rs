//! Bringing vectors from other stores into a workspace's documents. Only
//! Pinecone so far (`switchboard import pinecone`, [`pinecone`]).

pub mod pinecone;
