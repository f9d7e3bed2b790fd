"""The serving side: tables read, validated and scored at once (`scoring`) and the prediction
log every answer is written to (`predlog`)."""
