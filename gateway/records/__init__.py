"""The records clindav keeps: the audit log, consent, the trash and holds, patient paths, and the
scheduler that purges, expires and anchors them on the clock.
"""
