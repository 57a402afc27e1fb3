"""What a finished merge tells its reader: the model card's FW section and the plots."""
