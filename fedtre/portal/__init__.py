"""The web portal (fedtre portal serve) and a TRE's own page (fedtre agent portal)."""
