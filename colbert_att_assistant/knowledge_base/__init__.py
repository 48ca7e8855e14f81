"""The house's care guides and FAQs (documents/), their chunking, and labelled questions (eval/)."""
