"""Judging a migration, for both kinds: Great Expectations gates and shadow runs, with what they share written once."""
