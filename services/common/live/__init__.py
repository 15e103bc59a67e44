"""A live session: speech paced as it is heard, text spoken as it is written, listening."""
