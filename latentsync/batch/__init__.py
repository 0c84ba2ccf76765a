"""Batch lip-sync: many (video, speech) jobs across processes and machines (`python -m latentsync.batch`, or under
`accelerate launch`), each job claimed by one process (`latentsync.claims`), resumable, with a merged report."""
