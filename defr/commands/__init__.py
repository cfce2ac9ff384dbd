"""Click commands that parse options, call one library function each, and turn project errors into messages."""
