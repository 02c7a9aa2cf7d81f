"""The task a model is taught and scored on: the prompt it answers (with retrieved documents and a
person's details), the details a person may give, the teacher's answer schema, and how an answer
is scored.
"""
