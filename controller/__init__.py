"""Control core: loops, recipes, the recipe engine and the reactor controller.

Nothing here reads the wall clock or sleeps: time is passed in by the caller (the digital twin in
lockstep, or the service with an injected clock).
"""
