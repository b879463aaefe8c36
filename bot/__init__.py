"""imagine-bot front ends and the service they share."""
